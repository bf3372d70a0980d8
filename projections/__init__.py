"""sagalog.projections"""
