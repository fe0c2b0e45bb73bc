"""detkit.ops"""
