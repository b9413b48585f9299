"""The model weights and cards shipped with gan-face (see README.md in this folder)."""
