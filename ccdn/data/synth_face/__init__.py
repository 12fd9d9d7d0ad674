"""A parametric 3-D face that renders itself with exact landmarks in all four schemes (68/98/29/19).

Why this shape: the synthetic sets must exercise the real parsers *and* be learnable by a small
CNN, with landmarks that mean what each scheme says (so the schemes' mirror permutations hold
exactly). So every feature — jaw line, brows, eyelids, pupils, nose, lips — is one parametric curve
in a frontal *template plane*; each scheme's points are samples of those curves, and the texture
that paints the face is drawn from the very same curves. The template plane is wrapped onto the
front of an ellipsoid head, posed with yaw/pitch/roll and ray-cast per pixel (orthographic), which
gives true self-occlusion and Lambertian shading for free. Landmark visibility = the surface faces
the camera; occluders (ellipses, bars, glasses) add per-point occlusion flags from the same masks
that paint them.

Coordinates: template ``x`` grows to the image right, ``y`` downwards, ``z`` towards the camera;
"side" ``-1`` is the image-left feature of an upright frontal face (the ``l`` of
``ccdn.data.schemes``). Image coordinates put pixel ``i``'s centre at ``i`` (0-based), as the
annotations do.

The parts: :mod:`.geometry` (parameters, template curves, head, projection, annotation),
:mod:`.sampling` (random faces for given conditions) and :mod:`.painting` (the renderer).
"""

from __future__ import annotations

from ccdn.data.synth_face.geometry import (
    CONDITIONS,
    SCHEME_NAMES,
    Conditions,
    FaceParams,
    FaceShape,
    Occluder,
    RenderedFace,
    annotate,
    mirror_params,
    project,
    template_landmarks,
)
from ccdn.data.synth_face.painting import render_face
from ccdn.data.synth_face.sampling import hide_fraction, sample_params, sample_shape

__all__ = [
    "CONDITIONS",
    "SCHEME_NAMES",
    "Conditions",
    "FaceShape",
    "Occluder",
    "FaceParams",
    "RenderedFace",
    "sample_shape",
    "sample_params",
    "hide_fraction",
    "template_landmarks",
    "project",
    "annotate",
    "render_face",
    "mirror_params",
]
