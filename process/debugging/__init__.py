"""Debugging a saga from its log.

Replay (time travel), explain in words, what-if, and the timeline chart.
"""
