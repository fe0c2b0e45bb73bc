"""detkit.engine"""
