"""Demo models that Sluice deploys out of the box, trained locally from data that packages ship."""
