"""The dashboard page's bundled assets (package data, no code): a package so setuptools ships it."""
