"""detkit.modeling"""
