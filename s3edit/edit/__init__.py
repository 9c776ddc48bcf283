"""Editing the shared identity code: attribute names, classifiers and editors."""
