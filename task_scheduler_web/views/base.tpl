<!doctype html>
<html lang="{{lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}} · {{t('app.name')}}</title>
<link rel="stylesheet" href="/static/app.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<script src="/static/app.js" defer></script>
% if get('refresh'):
<noscript><meta http-equiv="refresh" content="3"></noscript>
% end
</head>
<body>
<header class="topbar">
  <a class="brand" href="/"><span class="brand-mark" aria-hidden="true">◷</span> {{t('app.name')}}</a>
  % if nav != "login":
  <nav class="nav" aria-label="{{t('nav.label')}}">
    % for key, href in h['nav']:
    % if key in ('new', 'users', 'audit') and not h['can']('admin'):
    % continue
    % elif key == nav:
    <a href="{{href}}" aria-current="page">{{t('nav.' + key)}}</a>
    % else:
    <a href="{{href}}">{{t('nav.' + key)}}</a>
    % end
    % end
  </nav>
  % end
  % if get('live'):
  <span class="live-badge" data-testid="live" data-state="off" data-label-stream="{{t('live.stream')}}" data-title-stream="{{t('live.stream_title')}}" data-label-poll="{{t('live.poll')}}" data-title-poll="{{t('live.poll_title')}}" hidden></span>
  % end
  <nav class="lang-switch" data-testid="lang-switch" aria-label="{{t('lang.label')}}">
    % for code, name in languages:
    % if code == lang:
    <a href="{{lang_url(code)}}" lang="{{code}}" hreflang="{{code}}" aria-current="true">{{name}}</a>
    % else:
    <a href="{{lang_url(code)}}" lang="{{code}}" hreflang="{{code}}">{{name}}</a>
    % end
    % end
  </nav>
  % if h['actor'] and nav != "login":
  <a class="whoami" href="/account" data-testid="whoami" data-role="{{h['actor'].role}}">{{h['actor'].name}} · {{t('role.' + h['actor'].role)}}</a>
  % end
  % if login:
  <form method="post" action="/logout" class="logout">
    % include('_csrf.tpl')
    <button type="submit" class="btn btn-quiet">{{t('nav.logout')}}</button>
  </form>
  % end
</header>
% if get('live'):
<main class="page" data-live-cursor="{{live['cursor']}}" data-live-job="{{live.get('job') or ''}}">
% else:
<main class="page">
% end
  % if flash:
  <div class="flash flash-{{flash.get('k', 'ok')}}" data-testid="flash" role="status">
    <span>{{flash.get('m', '')}}</span>
    % if flash.get('u'):
    <a href="{{flash['u']}}">{{t('flash.open_run')}}</a>
    % end
  </div>
  % end
{{!base}}
</main>
<footer class="footer" data-testid="time-zone" data-service-zone="{{str(locale.service_zone)}}" data-service-offsets="{{locale.winter_summer()}}">
  <span>{{t('app.name')}}</span>
  % if locale.browser_zone:
  <span>{{t('zone.browser', zone=locale.zone_label())}}</span>
  <a href="{{lang_url(tz='service')}}" data-testid="tz-service">{{t('zone.use_service', zone=str(locale.service_zone))}}</a>
  % else:
  <span>{{t('zone.service', zone=locale.zone_label())}}</span>
  <a href="{{lang_url(tz='service')}}" data-testid="tz-browser" data-tz-switch data-label="{{t('zone.use_browser')}}" hidden></a>
  % end
</footer>
</body>
</html>
