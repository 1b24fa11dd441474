import os
import sys

# `python -m sedamp` puts the current directory first on sys.path, where a module planted
# there would shadow an installed one; sedamp searches it last (runtime.stage.add_import_paths)
if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from sedamp.cli import main  # noqa: E402

main()
