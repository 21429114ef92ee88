"""Jetson Thor (sm_110a) hardware pieces."""
