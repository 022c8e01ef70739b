# Input functions and targets of the stage in rules/demo.smk.

from tuwen.run.declaration import contest_files

DEMO_FILES = {
    what: os.path.join(RUN.data_root, path) for what, path in contest_files().items()
}
DEMO_FOLDERS = ("t2i_gallery", "i2t_images", "train_images")


def demo_root(wildcards, output):
    return RUN.data_root
