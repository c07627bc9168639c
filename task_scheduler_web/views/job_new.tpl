% rebase('base.tpl')
<p class="crumbs"><a href="/jobs">{{t('nav.jobs')}}</a> /</p>
<h1>{{t('title.new')}}</h1>
% if clone_of:
<p class="note" data-testid="clone-note">{{t('new.clone_note', id=clone_of)}}</p>
% end
% include('_job_form.tpl', action='/jobs/new', editing=False, cancel='/jobs')
