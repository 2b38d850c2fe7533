"""Human- and machine-readable reports of recorded sweeps."""
