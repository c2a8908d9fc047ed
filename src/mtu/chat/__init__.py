"""`mtu chat`: the assistant of the paper's Fig. 1, a web chat where one upcycled model answers every request.

    routing.py     `route(text, has_image) -> Route`: the task a request asks for, from the task plug-ins' intents
    phrases.py     word stems and phrase matching for the router (`a|b` alternatives, `*` gaps, one-letter typos)
    vocabulary.py  the words the shipped toy-world model knows (a reply names the others)
    uploads.py     an uploaded file -> a checked image at the model's size; images scaled up for display
    serving.py     the resident model (the task switched per request), the per-conversation image store, `answer`
    app.py         the Gradio app (`mtu chat`), its queue, and the command line entry

Importing this package imports neither gradio nor torch models; `app.py` imports gradio.
"""

from .routing import Route, route

__all__ = ["Route", "route"]
