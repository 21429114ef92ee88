"""RTX Blackwell (sm_120a: RTX 5090) hardware pieces."""
