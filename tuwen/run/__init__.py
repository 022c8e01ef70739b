"""The declared run: what a run reads and asks (collections, tasks, training pairs, models and
channel switches), the contest preset, every path under results/, the config's schema, the
settings groups that make reruns exact, and the plans of paths the jobs read. Torch-free."""
