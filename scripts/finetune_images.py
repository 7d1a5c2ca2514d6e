"""Fine-tune an image classifier on a folder of class sub-folders.

  python scripts/finetune_images.py --images flowers/ --backbone MobileNetV2 \\
      --weights mobilenet_v2_weights.h5 --out_dir runs/flowers

The folder holds one sub-folder of images per class. The backbone is a
keras.applications name with weights from a local file (the official ImageNet
`.h5` files, or `imagenet` to download them), a KerasHub preset directory, or
`torchvision_resnet18` / `torchvision_resnet50` with a PyTorch checkpoint.
`keras_transfer.fine_tune` trains it (the learning-rate finder, the head with
the backbone frozen, then everything at discriminative rates), with the
augmentation asked for and a validation split. Writes model.keras,
results.json, curves.png and confusion.png to --out_dir
(`keras_transfer.vision.finetune_folder` from Python).
"""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

REPO = pathlib.Path(__file__).resolve().parent.parent

FLAGS = flags.FLAGS
flags.DEFINE_string("images", None, "The folder of class sub-folders of images.",
                    required=True)
flags.DEFINE_string("backbone", "MobileNetV2", "A keras.applications name, a KerasHub "
                    "preset directory, or torchvision_resnet18 / torchvision_resnet50.")
flags.DEFINE_string("weights", None, "The backbone's weights: a local file (Keras or tf_keras "
                    ".h5 by layer name; .pth / .safetensors for the torchvision backbones), "
                    "or 'imagenet' to download keras.applications' own; none by default.")
flags.DEFINE_string("out_dir", str(REPO / "runs" / "finetune_images"),
                    "Where model.keras, results.json, curves.png and confusion.png go.")
flags.DEFINE_integer("image_size", 224, "Images are resized to this square size.",
                     lower_bound=32)
flags.DEFINE_integer("epochs", 5, "Total epochs.", lower_bound=1)
flags.DEFINE_integer("freeze_epochs", 1, "Epochs training the head with the backbone "
                     "frozen.", lower_bound=0)
flags.DEFINE_integer("batch_size", 32, "Batch size.", lower_bound=1)
flags.DEFINE_float("validation_split", 0.2, "Share of the images held out for validation.",
                   lower_bound=0.0, upper_bound=0.9)
flags.DEFINE_boolean("flip", True, "Augment with random horizontal flips.")
flags.DEFINE_float("rotation", 0.0, "Augment with random rotations (a fraction of a turn).",
                   lower_bound=0.0)
flags.DEFINE_float("zoom", 0.0, "Augment with random zooms (a fraction).", lower_bound=0.0)
flags.DEFINE_float("base_lr", None, "The peak learning rate; default: the finder's.",
                   lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Seed of the weights, the split and the shuffling.")
flags.register_validator("freeze_epochs", lambda v: v <= FLAGS.epochs,
                         message="--freeze_epochs must not exceed --epochs.")


def run():
    import keras_transfer as kt

    results = kt.vision.finetune_folder(
        FLAGS.images, FLAGS.backbone, FLAGS.out_dir, weights_path=FLAGS.weights,
        image_size=(FLAGS.image_size, FLAGS.image_size), epochs=FLAGS.epochs,
        freeze_epochs=FLAGS.freeze_epochs, batch_size=FLAGS.batch_size,
        validation_split=FLAGS.validation_split, flip=FLAGS.flip, rotation=FLAGS.rotation,
        zoom=FLAGS.zoom, base_lr=FLAGS.base_lr, seed=FLAGS.seed)
    accuracy = results["validation_accuracy"]
    print(f"\n{len(results['classes'])} classes {results['classes']}; validation accuracy "
          + (f"{accuracy:.4f}" if accuracy is not None else "(no validation split)")
          + f"; wrote model.keras, results.json, curves.png, confusion.png to {FLAGS.out_dir}")
    return 0


def main(argv):
    from keras_transfer.pipeline import _cli

    return _cli.main_for(run, "finetune_images")(argv)


if __name__ == "__main__":
    app.run(main)
