"""The 40 CelebA attributes, by the names of CelebAMask-HQ-attribute-anno.txt."""

from __future__ import annotations

from s3edit.errors import UsageError

ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)


def resolve_attribute(name: str) -> str:
    """The canonical spelling of an attribute, matched case-insensitively ('-' as '_')."""
    key = name.strip().lower().replace("-", "_")
    for attr in ATTRIBUTES:
        if attr.lower() == key:
            return attr
    raise UsageError(f"unknown attribute {name!r}; choose one of: {', '.join(ATTRIBUTES)}")


def resolve_combination(name: str) -> str:
    """The canonical spelling of 'A+B' (images that have every attribute named)."""
    return "+".join(resolve_attribute(part) for part in name.split("+"))
