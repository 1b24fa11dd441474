"""Makes the sample images of topologies/thumbnails.yaml (run once; the images are kept
in the repository): python topologies/data/images/make_samples.py

    sunset.jpg            480 x 320 JPEG, a smooth gradient
    portrait-rotated.jpg  stored 400 x 300 with EXIF orientation 6: upright it is 300 x 400,
                          a triangle pointing up on a red top half and a blue bottom half
    logo.png              300 x 300 RGBA, a disc on a transparent background
    grey.png              500 x 200 greyscale gradient (mode L)
    small.png             64 x 48 RGB: already inside a 256 px box, so never enlarged
    holiday/beach.jpg     640 x 400 JPEG in a subfolder: sky, sea and sand
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ORIENTATION = 0x0112


def gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line([(0, y), (w, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    return img


def main() -> None:
    gradient((480, 320), (250, 170, 60), (90, 40, 120)).save(HERE / "sunset.jpg", quality=75)

    upright = Image.new("RGB", (300, 400), (200, 30, 30))
    upright.paste((30, 60, 200), (0, 200, 300, 400))
    ImageDraw.Draw(upright).polygon([(150, 40), (250, 180), (50, 180)], fill=(255, 255, 255))
    # Stored turned a quarter to the left; orientation 6 tells viewers to turn it back.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    stored.save(HERE / "portrait-rotated.jpg", quality=75, exif=exif.tobytes())

    logo = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    ImageDraw.Draw(logo).ellipse((30, 30, 270, 270), fill=(20, 140, 60, 255))
    logo.save(HERE / "logo.png", optimize=True)

    grey = Image.linear_gradient("L").rotate(90).resize((500, 200))
    grey.save(HERE / "grey.png", optimize=True)

    gradient((64, 48), (0, 120, 200), (240, 240, 240)).save(HERE / "small.png", optimize=True)

    beach = gradient((640, 400), (120, 180, 240), (200, 230, 250))
    beach.paste(gradient((640, 120), (20, 90, 160), (40, 130, 170)), (0, 180))
    beach.paste(gradient((640, 100), (230, 210, 160), (210, 180, 120)), (0, 300))
    (HERE / "holiday").mkdir(exist_ok=True)
    beach.save(HERE / "holiday" / "beach.jpg", quality=75)


if __name__ == "__main__":
    main()
