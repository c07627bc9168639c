% rebase('base.tpl')
<h1>{{t('audit.heading')}}</h1>
<p class="muted">{{t('audit.intro')}}</p>
<form class="filters" method="get" action="/audit" data-testid="audit-filter" role="search">
  <label>{{t('audit.actor')}}
    <input type="text" name="actor" value="{{filters['actor']}}" class="mono" size="14" placeholder="{{t('audit.actor_hint')}}">
  </label>
  <label>{{t('audit.action')}}
    <input type="text" name="action" value="{{filters['action']}}" class="mono" size="14" placeholder="{{t('audit.action_hint')}}">
  </label>
  <label class="grow">{{t('audit.object')}}
    <input type="text" name="object" value="{{filters['object']}}" class="mono" placeholder="{{t('audit.object_hint')}}">
  </label>
  <div class="filter-buttons">
    <button type="submit" class="btn">{{t('filter.apply')}}</button>
    <a class="btn btn-quiet" href="/audit">{{t('filter.clear')}}</a>
  </div>
</form>
% if entries:
<div class="table-wrap">
<table class="table">
  <thead>
    <tr><th>{{t('audit.col.at')}}</th><th>{{t('audit.col.actor')}}</th><th>{{t('audit.col.action')}}</th><th>{{t('audit.col.object')}}</th><th>{{t('audit.col.address')}}</th><th>{{t('audit.col.detail')}}</th></tr>
  </thead>
  <tbody>
  % for e in entries:
    <tr data-testid="audit-row" data-action="{{e['action']}}" data-actor="{{e['actor']}}">
      <td data-label="{{t('audit.col.at')}}">
        % include('_time.tpl', iso=e['at'])
      </td>
      <td data-label="{{t('audit.col.actor')}}"><span class="mono">{{e['actor']}}</span> <span class="muted small">{{e['actor_kind'] if e['actor_kind'] != e['actor'] else ''}}{{(' · ' + e['token_name']) if e['token_name'] else ''}}</span></td>
      <td data-label="{{t('audit.col.action')}}" class="mono">{{e['action']}}</td>
      <td data-label="{{t('audit.col.object')}}">
        % if e['object_type'] == 'job':
        <a class="mono" href="/jobs/{{e['object_id']}}">{{e['object_id']}}</a>
        % elif e['object_type'] == 'run':
        <a class="mono" href="/runs/{{e['object_id']}}">{{e['object_id']}}</a>
        % else:
        <span class="mono">{{e['object_type']}}:{{e['object_id']}}</span>
        % end
      </td>
      <td data-label="{{t('audit.col.address')}}" class="mono small">{{e['address'] or '—'}}</td>
      <td data-label="{{t('audit.col.detail')}}" class="small">{{e['detail_text']}}</td>
    </tr>
  % end
  </tbody>
</table>
</div>
% else:
<p class="muted" data-testid="audit-empty">{{t('audit.empty')}}</p>
% end
% if following:
<nav class="pager" aria-label="{{t('pager.label')}}">
  <a class="btn btn-quiet" href="{{following}}" rel="next" data-testid="audit-next">{{t('pager.next')}}</a>
</nav>
% end
