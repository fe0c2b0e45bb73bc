"""detkit.data"""
