"""Processing provider and algorithms of rs_text_search (index, search by text, find similar)."""
