"""Pictures and reports made from run directories."""
