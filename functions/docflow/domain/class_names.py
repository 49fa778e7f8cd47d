"""Docflow's class names, and the one function that maps a folder or CSV label onto them: Tobacco-3482's
folder names ("news", "report", "scientific"), RVL-CDIP's spellings, and any case or separator. Training
corpora, labelled scans and evaluation sets all read their labels through ``canonical_class``; a name it does
not know is lower-cased and used as is, so a class new to Docflow (from people's labels) needs no code change.
"""

from __future__ import annotations

# Folder or CSV label names used elsewhere for Docflow's classes; anything else is used as is.
CLASS_ALIASES: dict[str, str] = {
    "news": "news_article",
    "report": "scientific_report",
    "scientific": "scientific_publication",
    "ad": "advertisement",
    "advert": "advertisement",
    "e-mail": "email",
    "e_mail": "email",
    "cv": "resume",
}


def canonical_class(name: str) -> str:
    """Canonical class name for a folder or CSV label ("news" → "news_article", "Memo" → "memo",
    "Scientific Report" → "scientific_report")."""
    key = name.strip().lower()
    key = CLASS_ALIASES.get(key, key).replace("-", "_").replace(" ", "_")
    return CLASS_ALIASES.get(key, key)
