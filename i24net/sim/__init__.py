"""Simulation: the real router and node machines in virtual time (placeholder docstring)."""

from i24net.sim.simulation import Sent, Simulation

__all__ = ["Sent", "Simulation"]
