"""What to run: protocols and job configs (config), grids (grids), the paper's published numbers and claims (paper)."""
