"""sagalog.infrastructure"""
