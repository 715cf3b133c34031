//! Integration tests: the real binary against the simulator.
