"""Studies over scored systems: controlled defects (which metric sees which defect) and agreement
between metrics."""
