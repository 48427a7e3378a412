"""bluesky"""
