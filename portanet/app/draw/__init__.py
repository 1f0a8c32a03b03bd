"""``portanet draw``: a local page to draw a digit on and watch a saved model answer.

The page (``page.html``, one self-contained file) sends the drawing as PNG bytes to the
server (:mod:`portanet.app.draw.server`), which prepares it with the same code as ``portanet
predict`` (:func:`portanet.reader.digit.load_digit`) and answers with the class probabilities, the
28x28 image the network was given and what its first layer makes of it. The library does not
import this package; it needs Pillow (``pip install "portanet[draw]"``).
"""

from portanet.app.draw.server import DrawError, Reader, make_server, serve

__all__ = ["DrawError", "Reader", "make_server", "serve"]
