"""``trailers predict``: genre timelines of any video through the streaming model."""
