"""The local web page (python app.py): its server and static files."""
