"""The product's output documents, pure and shared by the CLI and the HTTP API: the JSON documents of
instances and scan state (:mod:`.documents`), the coverage report's CSV and HTML (:mod:`.report`) and its
paging (:mod:`.pages`). No I/O; the use cases build what these render."""
