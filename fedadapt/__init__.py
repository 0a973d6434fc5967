"""fedadapt package."""
