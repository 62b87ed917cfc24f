"""How work runs and lands: files written whole, pictures and tables, work shared by torchrun's processes."""
