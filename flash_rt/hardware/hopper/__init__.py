"""Hopper (sm_90a: H100/H200) hardware pieces."""
