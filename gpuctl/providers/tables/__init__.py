"""Data only: the GPU and region tables (`catalog` reads them as package resources)."""
