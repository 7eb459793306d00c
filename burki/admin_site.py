"""The admin site: its names, where "View site" leads, and the admin's own error pages."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class BurkiAdminSite(admin.AdminSite):
    site_header = "Burki outbound calls"
    site_title = "Burki admin"
    index_title = "Numbers, assistants, calls and money"
    # The service has no site of its own to view: its API documentation is the next best thing.
    site_url = "/api/docs/"
    # The side menu takes a third of a laptop's screen from the tables (calls, ledger): the
    # home page and the breadcrumbs lead everywhere it does.
    enable_nav_sidebar = False


class BurkiAdminConfig(AdminConfig):
    default_site = "burki.admin_site.BurkiAdminSite"


def admin_error_page(request: HttpRequest, status: int, title: str, text: str) -> HttpResponse:
    """An error inside the admin, as an admin page (the API's errors are JSON)."""
    context = {**admin.site.each_context(request), "title": title, "text": text}
    return render(request, "admin/error.html", context, status=status)
