"""Normalisation settings shared by the layers that build a GroupNorm.

Every GroupNorm detkit builds (the backbone and the FPN with ``model.backbone.norm = gn``, the box
head with ``model.roi_head.fc_norm = gn``) splits its channels into :data:`GROUP_NORM_GROUPS`
groups, as in Wu & He, "Group Normalization" (2018). The modules read this one value, and
:func:`detkit.config.validate` uses it to reject channel counts it does not divide.

Imports nothing (not even torch), so that :mod:`detkit.config` can import it and stay light.
"""

__all__ = ["GROUP_NORM_GROUPS"]

GROUP_NORM_GROUPS = 32
