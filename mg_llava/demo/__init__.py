"""Offline demo assets: a synthetic shapes world (`world`) and tiny random-init models (`tiny_assets`)."""
