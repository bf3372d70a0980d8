"""sagalog.process"""
