"""Object storage on ``/storage/v1``, compatible with Supabase's ``storage3``
client: buckets and objects whose metadata lives in PostgreSQL under RLS and
whose bytes live on a backend (files by default, S3/MinIO when configured)."""
