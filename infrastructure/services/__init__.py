"""Participant services.

The participant helper, fencing against late and superseded commands, and choreography.
"""
