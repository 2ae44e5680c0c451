"""A real OpenID Connect provider for the OAuth tests: django-oidc-provider (PyPI) in a minimal
Django project, on a loopback port, with one user, one confidential client and an RSA signing key.

    python oidc_idp.py DIR PORT CONFIG_JSON

CONFIG_JSON: {"client_id", "client_secret", "redirect_uris": [...], "users": [{"username", "password",
"email"}]}. Serves until killed (the test stops it by pid). The issuer is http://127.0.0.1:PORT/openid.
The login page is Django's LoginView; the consent page is the package's own authorize form."""
import json
import os
import sys


def configure(directory):
    import django
    from django.conf import settings

    templates = os.path.join(directory, "templates")
    os.makedirs(os.path.join(templates, "registration"), exist_ok=True)
    with open(os.path.join(templates, "registration", "login.html"), "w") as f:
        f.write('<form method="post">{% csrf_token %}{{ form.as_p }}'
                '<input type="hidden" name="next" value="{{ next }}"><input type="submit" value="Sign in"></form>')
    settings.configure(
        DEBUG=False,
        SECRET_KEY="oidc-idp-test-" + "x" * 40,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions", "oidc_provider"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware", "django.middleware.csrf.CsrfViewMiddleware",
                    "django.contrib.auth.middleware.AuthenticationMiddleware"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [templates], "APP_DIRS": True,
                    "OPTIONS": {"context_processors": ["django.template.context_processors.request"]}}],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(directory, "idp.sqlite3")}},
        LOGIN_URL="/accounts/login/",
        USE_TZ=True,
        LOGGING={"version": 1, "handlers": {"stderr": {"class": "logging.StreamHandler"}},
                 "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}}},
        OIDC_USERINFO=__name__ + ".userinfo",
        OIDC_IDTOKEN_INCLUDE_CLAIMS=False,  # the email comes from the userinfo endpoint (aerodb reads it there)
    )
    django.setup()


def userinfo(claims, user):
    claims["email"] = user.email
    claims["email_verified"] = not user.username.startswith("unverified")  # test users whose address the provider did not check
    claims["name"] = user.get_full_name() or user.username
    claims["preferred_username"] = user.username
    return claims


urlpatterns = []


def main():
    directory, port, config = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    configure(directory)
    global urlpatterns
    from django.contrib.auth.views import LoginView
    from django.urls import include, path
    urlpatterns = [path("openid/", include("oidc_provider.urls", namespace="oidc_provider")),
                   path("accounts/login/", LoginView.as_view())]

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from oidc_provider.models import Client, ResponseType, RSAKey

    call_command("migrate", verbosity=0)
    if not RSAKey.objects.exists():
        call_command("creatersakey")
    for u in config["users"]:
        if not User.objects.filter(username=u["username"]).exists():
            User.objects.create_user(u["username"], u["email"], u["password"])
    if not Client.objects.filter(client_id=config["client_id"]).exists():
        client = Client(name="aerodb", client_id=config["client_id"], client_secret=config["client_secret"],
                        client_type="confidential", require_consent=True, reuse_consent=False)
        client.redirect_uris = config["redirect_uris"]
        client.save()
        client.response_types.add(ResponseType.objects.get(value="code"))

    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from django.core.wsgi import get_wsgi_application

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", port, get_wsgi_application(), server_class=Server, handler_class=QuietHandler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
