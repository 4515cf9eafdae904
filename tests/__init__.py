"""
Tests for agilerpc.
"""
