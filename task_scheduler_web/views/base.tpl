<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}} · task-scheduler</title>
<link rel="stylesheet" href="/static/app.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="topbar">
  <a class="brand" href="/"><span class="brand-mark" aria-hidden="true">◷</span> task-scheduler</a>
  % if nav != "login":
  <nav class="nav" aria-label="Main">
    % for key, href, label in h['nav']:
    % if key == nav:
    <a href="{{href}}" aria-current="page">{{label}}</a>
    % else:
    <a href="{{href}}">{{label}}</a>
    % end
    % end
  </nav>
  % end
  % if login:
  <form method="post" action="/logout" class="logout">
    % include('_csrf.tpl')
    <button type="submit" class="btn btn-quiet">Log out</button>
  </form>
  % end
</header>
<main class="page">
  % if flash:
  <div class="flash flash-{{flash.get('k', 'ok')}}" data-testid="flash" role="status">
    <span>{{flash.get('m', '')}}</span>
    % if flash.get('u'):
    <a href="{{flash['u']}}">Open the run →</a>
    % end
  </div>
  % end
{{!base}}
</main>
<footer class="footer">task-scheduler · all times in UTC</footer>
</body>
</html>
