"""Tables and figures of the scored systems and the studies, for the workflow's report."""
