"""Tools that apply the models to footage: test-set generation, `dub`, `score-videos`, video
encoding."""
