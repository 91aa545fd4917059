window.API_BASE_URL = "https://kga.acme.example.com/api/v1";
