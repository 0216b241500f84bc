# The identity URLs mounted where the project mounts them, without the rest of the project.
from django.urls import include, path

urlpatterns = [path("credentials/", include("identity.urls"))]
