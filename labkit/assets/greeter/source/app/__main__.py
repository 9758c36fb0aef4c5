import sys

from app.main import app

if "--check" in sys.argv:
    reply = app.test_client().get("/")
    assert reply.status_code == 200, reply.status
    print(reply.get_data(as_text=True))
else:
    app.run(host="0.0.0.0", port=8000)
