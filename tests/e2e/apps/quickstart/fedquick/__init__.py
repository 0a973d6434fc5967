"""fedquick: a quickstart-shaped Flower app for fedadapt's end-to-end tests."""
