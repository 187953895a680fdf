"""Sample upstream services that speak the real API shapes, for the demo and the tests."""
