"""Data: record formats, image loading, transforms, datasets and dataset builders."""
