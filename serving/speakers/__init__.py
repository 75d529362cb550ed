"""Speaker verification: enrol a voice from clips, verify a clip against it, delete it.

Embeddings are personal data (a voiceprint identifies a person), so they live only in this region's speaker store
(in-process, or the region's own Redis), scoped to the tenant that enrolled them, and never in the model bucket,
which replicates.
"""
